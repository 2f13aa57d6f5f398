"""A plugin whose dependency is missing: importing it fails."""

raise ImportError("ss_fixture_broken needs the package 'not-installed-anywhere'")
