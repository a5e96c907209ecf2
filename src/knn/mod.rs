//! Exact nearest-collection distances (in progress).
