-- sera in Neovim 0.7 and later: `sera lsp` attached to source buffers, and the :Sera commands.
--
--   require('sera').setup({ cmd = { '/path/to/.venv/bin/sera', 'lsp' } })   -- or: luafile sera.lua
--
-- :Sera TASK          solve TASK; the candidates are offered when it ends (Apply, Preview, ...)
-- :SeraApply [RUN:N]  apply a candidate (default: the last run's top one) through the editor
-- :SeraUndo           undo the last apply (your later edits are kept)
-- :SeraCancel         stop the running solve or specialize
-- :SeraSpecialize [PRESET]   teach sera this repository (demo, laptop, gpu)
-- Code actions (vim.lsp.buf.code_action()) offer "sera: fix ..." on diagnostics, "sera: do ..."
-- on TODO comments and, after a solve, "sera: apply candidate N" at the lines it changes.
-- Progress comes as $/progress (shown by a progress plugin, or vim.lsp.status() on 0.10+); each
-- outcome also comes as a message.

local M = {}

M.filetypes = { 'python', 'javascript', 'typescript', 'javascriptreact', 'typescriptreact', 'go',
                'rust', 'java' }

local function root_of(path)
  local found = vim.fn.finddir('.git', vim.fn.fnamemodify(path, ':p:h') .. ';')
  if found == '' then
    return nil
  end
  return vim.fn.fnamemodify(found, ':p:h:h')
end

local clients = {}  -- repository root -> client id

local function attach(buffer, options)
  local root = root_of(vim.api.nvim_buf_get_name(buffer))
  if not root then
    return
  end
  local config = { name = 'sera', cmd = options.cmd, root_dir = root,
                   init_options = options.settings }
  if vim.lsp.start then  -- 0.8+: starts or reuses the client of this root, and attaches
    clients[root] = vim.lsp.start(config, { bufnr = buffer })
    return
  end
  if not clients[root] then
    clients[root] = vim.lsp.start_client(config)
  end
  vim.lsp.buf_attach_client(buffer, clients[root])
end

-- The client of the current buffer's repository.
function M.client()
  local root = root_of(vim.api.nvim_buf_get_name(0)) or vim.fn.getcwd()
  return clients[root] and vim.lsp.get_client_by_id(clients[root])
end

function M.command(name, arguments)
  local client = M.client()
  if not client then
    vim.notify('sera: no sera server for this buffer; open a source file of a git repository',
               vim.log.levels.ERROR)
    return
  end
  local params = { command = name, arguments = arguments }
  local function done(err, result)
    if err then
      vim.notify('sera: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    end
    M.last_result = result
  end
  if vim.fn.has('nvim-0.11') == 1 then
    client:request('workspace/executeCommand', params, done, 0)  -- methods take self from 0.11
  else
    client.request('workspace/executeCommand', params, done, 0)
  end
end

function M.setup(options)
  options = vim.tbl_extend('keep', options or {}, { cmd = { 'sera', 'lsp' }, settings = {} })
  vim.api.nvim_create_autocmd('FileType', {
    pattern = M.filetypes,
    callback = function(args) attach(args.buf, options) end,
  })
  local uri = function() return vim.uri_from_bufnr(0) end
  vim.api.nvim_create_user_command('Sera', function(o)
    M.command('sera.solve', { { task = o.args, uri = uri() } })
  end, { nargs = '+' })
  vim.api.nvim_create_user_command('SeraApply', function(o)
    M.command('sera.apply', { { target = o.args ~= '' and o.args or nil, uri = uri() } })
  end, { nargs = '?' })
  vim.api.nvim_create_user_command('SeraUndo', function()
    M.command('sera.undo', { { uri = uri() } })
  end, {})
  vim.api.nvim_create_user_command('SeraCancel', function()
    M.command('sera.cancel', {})
  end, {})
  vim.api.nvim_create_user_command('SeraSpecialize', function(o)
    M.command('sera.specialize', { { uri = uri(), preset = o.args ~= '' and o.args or nil } })
  end, { nargs = '?' })
end

return M
