"""Customers: the import of accounts and contacts, the segment rules and segmentation."""
