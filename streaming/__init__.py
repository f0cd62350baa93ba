"""Live streaming (block processor, transport, devices): not built yet -- see the open issue."""
