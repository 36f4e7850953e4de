package console

// authRoutes registers the first-run setup, login, two-factor enrolment
// and logout endpoints.
func (c *Console) authRoutes() {}
