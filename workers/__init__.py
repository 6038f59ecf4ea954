"""Background processes of the hub; they import the hub's shared core, never the reverse."""
