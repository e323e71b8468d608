"""exits"""
