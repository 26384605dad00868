//! containerd 1.6 over gRPC: pull (registry API + content store), unpack
//! (snapshots + diff service), create/start/wait/kill/delete, list by label.
