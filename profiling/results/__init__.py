"""rows and their files: the row type, the SQLite store, export, uploads, shipped reference rows."""
