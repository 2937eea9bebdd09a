"""Leaf types shared by every layer: errors, tensor specs, stage contract, settings, the
overlay ISA and its packer."""
