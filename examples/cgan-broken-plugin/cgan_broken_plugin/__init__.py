"""A plugin that fails to import, as a plugin with a missing dependency would."""

raise ImportError("this plugin is broken on purpose (missing dependency 'not_a_real_package')")
