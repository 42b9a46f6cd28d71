"""The only asyncio/socket code: transports, driver loop, action API, app wiring."""
