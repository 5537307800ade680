"""The runtime: runs an OCI runtime-spec bundle (config.json + rootfs)."""
