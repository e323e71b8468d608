"""rocoin"""
