//! CNI protocol types and plugin plumbing shared by every plugin in this workspace.
