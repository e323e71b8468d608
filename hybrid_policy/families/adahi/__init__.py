"""adahi"""
