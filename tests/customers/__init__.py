"""Tests of the customers wing: import and segmentation."""
