"""The deliver stage: the asyncio loop that sends each event, with retries and limits."""
