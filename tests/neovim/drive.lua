-- Headless Neovim driving `sera lsp` through the setup users load (editors/neovim/sera.lua):
-- solve, apply (the buffer changes, unsaved edits kept, no :checktime), undo, preview.
-- Arguments come as globals set with --cmd: SERA_LUA, SERA_CMD (a list), REPO, OUT.
local sera = dofile(SERA_LUA)
local out = { messages = {}, errors = {} }

local function finish()
  vim.fn.writefile({ vim.fn.json_encode(out) }, OUT)
  vim.cmd('qa!')
end

local function fail(message)
  table.insert(out.errors, message)
  finish()
end

vim.lsp.handlers['window/showMessage'] = function(_, result)
  table.insert(out.messages, result.message)
end
vim.lsp.handlers['window/showMessageRequest'] = function() return vim.NIL end  -- Dismiss

vim.cmd('filetype on')  -- -u NONE leaves it off; every user setup has it
sera.setup({ cmd = SERA_CMD, settings = { candidates = 1 } })
vim.cmd('edit ' .. REPO .. '/calc.py')
if not vim.wait(60000, function()
  local client = sera.client()
  return client ~= nil and client.server_capabilities ~= nil
    and next(client.server_capabilities) ~= nil
end, 50) then
  return fail('the sera server did not start')
end

local function execute(command, arguments)
  local replies = vim.lsp.buf_request_sync(0, 'workspace/executeCommand',
                                           { command = command, arguments = arguments }, 120000)
  if not replies then
    return fail(command .. ' got no answer')
  end
  local _, reply = next(replies)
  if reply.err then
    return fail(command .. ': ' .. vim.inspect(reply.err))
  end
  return reply.result
end

local function lines()
  return vim.api.nvim_buf_get_lines(0, 0, -1, false)
end

vim.api.nvim_buf_set_lines(0, -1, -1, false, { '# typed, not saved' })
local uri = vim.uri_from_bufnr(0)
out.solve = execute('sera.solve', { { task = 'calc.add is wrong', uri = uri } })
out.apply = execute('sera.apply', { { uri = uri } })
out.applied = lines()
out.undo = execute('sera.undo', { { uri = uri } })
out.undone = lines()
out.preview = execute('sera.preview', { { uri = uri } })
out.modified = vim.api.nvim_buf_get_option(0, 'modified')
finish()
