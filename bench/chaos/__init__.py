"""The fault campaign of issue 10 (`make chaos`): real faults against a private stack, RELIABILITY.md."""
