"""One module per pipeline area; definitions.py loads every asset and check found here."""
