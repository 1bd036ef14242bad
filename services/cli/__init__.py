"""``infusion``: the staff console's jobs from a terminal (docs/console.md "Command line")."""
