"""What every service's database needs: an engine with sane SQLite settings, and migrations."""
