"""The backup daemon of a storage node (ctbackup): borg facts, watcher, cycles."""
