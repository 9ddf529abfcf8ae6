"""(filled by the issue that builds it)"""
