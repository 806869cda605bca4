"""The reference agent: what runs inside a CVM and dials in to the agents endpoint."""
