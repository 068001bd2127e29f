//! The Job controller: not implemented yet (completions, parallelism, backoffLimit, Indexed mode and pod-tracking finalizers are planned here).
