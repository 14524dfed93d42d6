"""msgspec Structs for every request and response body the server speaks."""
