"""City Tools that ship with the platform, built on urbanstack.toolkit."""
