"""What people and programs read: the narrative, the Postfix-style log, the JSON Lines trace,
the zone findings, the terminal styling, and the HTML report. Every module here only reads
events and results; nothing in the sandbox reads an output."""
