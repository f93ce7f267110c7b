// Command inventory-bench reads a vCenter's inventory the way govc does —
// govmomi's view.ContainerView over the root folder, then one property
// collector Retrieve per object type with a fixed property set — and prints
// what it found as one JSON line. It is peer (b) of `python -m bench vsphere`
// (bench/vsphere.py): the same property set as Ventana's vSphere backend
// (backends/vsphere/session.py), so the timings compare like with like.
//
//	VCSIM_USERNAME=u VCSIM_PASSWORD=p inventory-bench -url https://127.0.0.1:PORT/sdk -ca ca.pem
//
// Credentials come from the environment so that they never show in `ps`.
// Output: {"login_s":..,"retrieve_s":..,"total_s":..,"vms":[names],"hosts":[names],
// "datastores":[names],"clusters":[names],"snapshots":N}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/url"
	"os"
	"sort"
	"time"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The property sets of backends/vsphere/session.py.
var (
	vmPaths = []string{"name", "runtime.powerState", "runtime.host", "runtime.connectionState",
		"runtime.consolidationNeeded", "config.hardware", "config.version", "config.firmware",
		"snapshot", "layoutEx", "datastore", "guest.toolsRunningStatus"}
	hostPaths      = []string{"name", "runtime.connectionState", "runtime.inMaintenanceMode", "parent"}
	datastorePaths = []string{"name", "summary.capacity", "summary.freeSpace", "summary.accessible", "host"}
	computePaths   = []string{"name", "host"}
)

type result struct {
	LoginS     float64  `json:"login_s"`
	RetrieveS  float64  `json:"retrieve_s"`
	TotalS     float64  `json:"total_s"`
	VMs        []string `json:"vms"`
	Hosts      []string `json:"hosts"`
	Datastores []string `json:"datastores"`
	Clusters   []string `json:"clusters"`
	Snapshots  int      `json:"snapshots"`
}

func countSnapshots(trees []types.VirtualMachineSnapshotTree) int {
	n := 0
	for _, t := range trees {
		n += 1 + countSnapshots(t.ChildSnapshotList)
	}
	return n
}

func sorted(names []string) []string {
	sort.Strings(names)
	return names
}

func main() {
	rawURL := flag.String("url", "", "SDK URL, https://HOST:PORT/sdk")
	ca := flag.String("ca", "", "PEM CA bundle that signed the server certificate")
	flag.Parse()
	if *rawURL == "" || *ca == "" {
		log.Fatal("-url and -ca are required")
	}
	u, err := url.Parse(*rawURL)
	if err != nil {
		log.Fatalf("-url: %v", err)
	}
	ctx := context.Background()
	start := time.Now()

	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(*ca); err != nil {
		log.Fatalf("-ca: %v", err)
	}
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	user := url.UserPassword(os.Getenv("VCSIM_USERNAME"), os.Getenv("VCSIM_PASSWORD"))
	if err := session.NewManager(c).Login(ctx, user); err != nil {
		log.Fatalf("login: %v", err)
	}
	loggedIn := time.Now()

	m := view.NewManager(c)
	kinds := []string{"VirtualMachine", "HostSystem", "Datastore", "ComputeResource"}
	v, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, kinds, true)
	if err != nil {
		log.Fatalf("container view: %v", err)
	}
	var vms []mo.VirtualMachine
	var hosts []mo.HostSystem
	var stores []mo.Datastore
	var computes []mo.ComputeResource
	for _, step := range []struct {
		kind  string
		paths []string
		dst   interface{}
	}{
		{"VirtualMachine", vmPaths, &vms},
		{"HostSystem", hostPaths, &hosts},
		{"Datastore", datastorePaths, &stores},
		{"ComputeResource", computePaths, &computes},
	} {
		if err := v.Retrieve(ctx, []string{step.kind}, step.paths, step.dst); err != nil {
			log.Fatalf("retrieve %s: %v", step.kind, err)
		}
	}
	done := time.Now()
	_ = v.Destroy(ctx)

	out := result{
		LoginS:    loggedIn.Sub(start).Seconds(),
		RetrieveS: done.Sub(loggedIn).Seconds(),
		TotalS:    done.Sub(start).Seconds(),
	}
	for _, vm := range vms {
		out.VMs = append(out.VMs, vm.Name)
		if vm.Snapshot != nil {
			out.Snapshots += countSnapshots(vm.Snapshot.RootSnapshotList)
		}
	}
	for _, h := range hosts {
		out.Hosts = append(out.Hosts, h.Name)
	}
	for _, d := range stores {
		out.Datastores = append(out.Datastores, d.Name)
	}
	for _, cr := range computes {
		out.Clusters = append(out.Clusters, cr.Name)
	}
	out.VMs, out.Hosts = sorted(out.VMs), sorted(out.Hosts)
	out.Datastores, out.Clusters = sorted(out.Datastores), sorted(out.Clusters)
	_ = session.NewManager(c).Logout(ctx)
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		log.Fatal(err)
	}
}
