package console

// pageRoutes registers the signed-in pages.
func (c *Console) pageRoutes() {}
