"""What a call becomes: the stores (SQLite, PostgreSQL) and the HTML report.."""
