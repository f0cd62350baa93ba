"""Live streaming: block processors whose streamed output equals offline coding, UDP/TCP/file
transport with a jitter buffer and loss concealment, sound-device I/O, and the `stream` and
`listen` commands (:mod:`streaming.commands`)."""
