//! The DaemonSet controller: not implemented yet (one pod per eligible node, daemon tolerations, rolling update are planned here).
