"""The built-in pix2pix plugins: each module is one plugin, loaded through the cgan_kit entry points."""
