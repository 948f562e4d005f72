"""The door-pass benchmark (`edge eval door`): real people's photos rendered as walks toward a door camera
(plan -> render), replayed through the daemon's own pipeline (probe), scored per condition against the attendance
rules (score); bench runs it, cli is its command. Nothing on a box imports this package."""
