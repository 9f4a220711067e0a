//! Media type strings of the OCI image spec and their Docker v2 schema2 counterparts.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker zstd layer (as written by buildkit).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker foreign (non-distributable) layer.
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// OCI non-distributable gzip layer (deprecated by the spec, still met in the wild).
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// True for the media types of a single-image manifest (OCI or Docker).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// True for the media types of an index / manifest list (OCI or Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The OCI media type for a layer media type, if hoist understands it.
pub fn oci_layer(media_type: &str) -> Option<&'static str> {
    match media_type {
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(OCI_LAYER_GZIP),
        OCI_LAYER_ZSTD | DOCKER_LAYER_ZSTD => Some(OCI_LAYER_ZSTD),
        OCI_LAYER_TAR => Some(OCI_LAYER_TAR),
        OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_FOREIGN => Some(OCI_LAYER_NONDIST_GZIP),
        _ => None,
    }
}

/// The Docker schema2 media type for a layer media type, if one exists.
pub fn docker_layer(media_type: &str) -> Option<&'static str> {
    match media_type {
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(DOCKER_LAYER_GZIP),
        OCI_LAYER_ZSTD | DOCKER_LAYER_ZSTD => Some(DOCKER_LAYER_ZSTD),
        OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_FOREIGN => Some(DOCKER_LAYER_FOREIGN),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_layers_both_ways() {
        assert_eq!(oci_layer(DOCKER_LAYER_GZIP), Some(OCI_LAYER_GZIP));
        assert_eq!(docker_layer(OCI_LAYER_GZIP), Some(DOCKER_LAYER_GZIP));
        assert_eq!(oci_layer("text/plain"), None);
        assert_eq!(docker_layer(OCI_LAYER_TAR), None);
        assert!(is_index(DOCKER_MANIFEST_LIST) && !is_index(OCI_MANIFEST));
    }
}
