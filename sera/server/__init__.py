"""The language server (`sera lsp`)."""
