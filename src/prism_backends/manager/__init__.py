"""The host manager: one QEMU VM per CVM, behind Cocos' ManagerService.

See docs/architecture.md for its parts.
"""
