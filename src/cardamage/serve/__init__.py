"""Web app and REST API: `app.create_app` for any ASGI server, `server.run` for the CLI."""
