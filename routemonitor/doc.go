// Package routemonitor keeps a node's route table true as nodes come and
// go, after Mitogen's RouteMonitor.
//
// For each child link it keeps the set of node IDs reached through it. A new
// child link starts with {child ID} and ADD_ROUTE goes to the parent; an
// ADD_ROUTE from the child that owns a link adds to that link's set and
// climbs further. When a link is lost every ID in its set is removed: for
// each, DEL_ROUTE goes up to the parent and down every link whose traffic
// was ever sent toward it, pending replies for it fail at once, and a
// disconnect event fires. Because ADD_ROUTE handling runs on the link's
// read loop, before the next frame is read, an ancestor always learns a
// route before any message from the node it names.
package routemonitor
