"""The storage node's side of a tenant move (`ctstorage`): copy a CT's /data from a
peer storage node with rsync over SSH, say how big a CT's /data is, remove it.
The destination rack's manager runs these over SSH (executor/storage.py)."""
