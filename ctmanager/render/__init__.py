"""Config rendering: CT files (OpenVZ, LXC, resolv.conf) and storage exports.

Nothing is imported here on purpose: an agent renders with `ctfiles` and
`engine` and must not load `tree`, which reads the store."""
