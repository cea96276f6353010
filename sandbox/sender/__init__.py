"""The sender agent's I/O shell: the driver loop (``agent``), the stub resolver, the SMTP
client, the connection cache and the test messages. It performs what the core decides."""
