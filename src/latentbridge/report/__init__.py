"""Reports generated from run folders: experiment tables, comparisons over seeds, learning curves."""
