"""Small datasets shipped inside the package: UMLS and Kinship archives, Cora raw files."""
