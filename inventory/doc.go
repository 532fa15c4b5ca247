// Package inventory reads the Ansible inventories users already have, INI
// and YAML, into target paths.
//
// What is read: groups, nested groups (":children" in INI, "children" in
// YAML), group and host variables, host ranges ("web[01:20]"), and of the
// variables ansible_host, ansible_port, ansible_user, ansible_connection
// (ssh, the default; local; docker) and arbor_via, a path of hops in
// front of the host ("ssh:bastion"). Variables follow Ansible's order:
// "all", then groups from the outermost in, then the host's own.
//
// What is refused with an error that says so: dynamic inventory scripts
// (an executable file), inventory directories, inventory plugins
// ("plugin:" in YAML), vault-encrypted files and values, alphabetic
// ranges, and unknown sections or keys.
package inventory
