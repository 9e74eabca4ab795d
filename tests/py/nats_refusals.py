"""What the tests' nats-py clients share: trying what a client must not do and recording what
the server refused (shell_nats.py, tenant_nats.py)."""
import asyncio


def refusals(nc, errors):
    """A dict name -> the server's refusal (None: allowed), and `attempt(name, coro)` that
    fills it. `errors` is the list the connection's error_cb appends the server's errors to."""
    refused = {}

    async def attempt(name, coro):
        before = len(errors)
        try:
            await coro
            await nc.flush()
            await asyncio.sleep(0.3)
            got = errors[before:]
            refused[name] = got[0] if got else None
        except Exception as e:
            # A refused request times out; the server's reason arrives through error_cb.
            await asyncio.sleep(0.2)
            got = errors[before:]
            refused[name] = got[0] if got else f"{type(e).__name__}: {e}"

    return refused, attempt
