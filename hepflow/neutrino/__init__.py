"""The semileptonic ttbar neutrino analysis (filled in below)."""
