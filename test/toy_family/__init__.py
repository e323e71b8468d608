"""A sixth family, kept outside the package and registered by ``HYBRID_POLICY_FAMILIES``,
to prove the seam: a constant policy served from one server."""
