// Command vcsim-ventana runs govmomi's vSphere API simulator (Debian's
// golang-github-vmware-govmomi-dev sources plus tools/vcsim/patches) as the
// test peer of Ventana's vSphere backend.
//
// The first line on stdout is the SDK URL (https://HOST:PORT/sdk), printed
// once the server accepts connections; everything else goes to stderr.
// Credentials come from VCSIM_USERNAME / VCSIM_PASSWORD so that they never
// show in `ps`. SIGTERM or SIGINT removes the temporary datastore folders and
// exits 0.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path"
	"sort"
	"syscall"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type sizes struct {
	datacenters, clusters, clusterHosts, standaloneHosts, vmsPerHost, datastores int
	autostart                                                                    bool
}

func main() {
	// Registered first: a SIGTERM that arrives while the inventory is being built
	// or right after the URL is printed must still clean up the datastore folders.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)

	var sz sizes
	listen := flag.String("listen", "127.0.0.1:0", "listen address host:port (port 0 picks a free port)")
	certFile := flag.String("tls-cert", "", "PEM certificate (chain) served to clients")
	keyFile := flag.String("tls-key", "", "PEM private key of -tls-cert")
	plain := flag.Bool("plain-http", false, "serve plain HTTP instead of TLS (benchmarks only)")
	quiet := flag.Bool("quiet", false, "discard the simulator's request log")
	flag.IntVar(&sz.datacenters, "dc", 1, "datacenters")
	flag.IntVar(&sz.clusters, "clusters", 1, "clusters per datacenter")
	flag.IntVar(&sz.clusterHosts, "cluster-hosts", 3, "hosts per cluster")
	flag.IntVar(&sz.standaloneHosts, "standalone-hosts", 0, "standalone hosts per datacenter")
	flag.IntVar(&sz.vmsPerHost, "vms-per-host", 2, "VMs per host (cluster and standalone hosts)")
	flag.IntVar(&sz.datastores, "datastores", 1, "local datastores per datacenter, mounted on every host; VMs are spread round-robin")
	flag.BoolVar(&sz.autostart, "autostart", true, "power on the VMs created at start-up")
	flag.Parse()

	if flag.NArg() != 0 {
		log.Fatalf("unexpected arguments: %v", flag.Args())
	}
	if sz.datacenters < 1 || sz.datastores < 1 || sz.clusters < 0 || sz.clusterHosts < 0 ||
		sz.standaloneHosts < 0 || sz.vmsPerHost < 0 {
		log.Fatal("-dc and -datastores must be >= 1, other sizes >= 0")
	}
	if !*plain && (*certFile == "" || *keyFile == "") {
		log.Fatal("-tls-cert and -tls-key are required (or -plain-http)")
	}
	if _, _, err := net.SplitHostPort(*listen); err != nil {
		log.Fatalf("-listen %q: %v", *listen, err)
	}

	user, pass := os.Getenv("VCSIM_USERNAME"), os.Getenv("VCSIM_PASSWORD")
	if (user == "") != (pass == "") {
		log.Fatal("set both VCSIM_USERNAME and VCSIM_PASSWORD, or neither")
	}
	// Not inherited by anything this process might start.
	_ = os.Unsetenv("VCSIM_PASSWORD")

	var tlsConfig *tls.Config
	if !*plain {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("TLS certificate: %v", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	if *quiet {
		log.SetOutput(ioutil.Discard)
	}

	model := simulator.VPX()
	model.Datacenter = sz.datacenters
	model.Cluster = sz.clusters
	model.ClusterHost = sz.clusterHosts
	model.Host = sz.standaloneHosts
	model.Datastore = sz.datastores
	model.Machine = 0 // VMs are created per host below (the Model creates them per resource pool)
	model.Autostart = sz.autostart
	esx.HostSystem.Summary.Hardware.Vendor += " (govmomi simulator)"

	if err := model.Create(); err != nil {
		model.Remove()
		log.Fatalf("creating the inventory: %v", err)
	}
	if err := createVMs(model, sz); err != nil {
		model.Remove()
		log.Fatalf("creating VMs: %v", err)
	}

	model.Service.Listen = &url.URL{Host: *listen}
	if user != "" {
		model.Service.Listen.User = url.UserPassword(user, pass)
	}
	model.Service.TLS = tlsConfig
	server := newServer(model)

	u := *server.URL
	u.User = nil // never print credentials
	fmt.Println(u.String())
	_ = os.Stdout.Sync()

	<-sig

	// httptest.Server.Close waits for outstanding requests, and a WaitForUpdatesEx
	// without maxWaitSeconds never ends: close the listener, clean up, exit.
	_ = server.Listener.Close()
	model.Remove()
	os.Exit(0)
}

// newServer starts the server; NewServer panics when it cannot listen, and the
// datastore folders must not be left behind then.
func newServer(model *simulator.Model) *simulator.Server {
	defer func() {
		if err := recover(); err != nil {
			model.Remove()
			log.Fatalf("starting the server: %v", err)
		}
	}()
	return model.Service.NewServer()
}

// createVMs creates sz.vmsPerHost VMs on every host, in the host's root resource
// pool and its datacenter's VM folder, spreading their files round-robin over
// the datacenter's datastores (LocalDS_0..N-1), like the Model does for one pool.
func createVMs(model *simulator.Model, sz sizes) error {
	if sz.vmsPerHost == 0 {
		return nil
	}
	ctx := context.Background()
	c, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		return err
	}

	hosts := simulator.Map.All("HostSystem")
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Entity().Name < hosts[j].Entity().Name })

	next := map[types.ManagedObjectReference]int{} // datacenter -> next datastore index
	for _, h := range hosts {
		host := object.NewHostSystem(c, h.Reference())
		pool, err := host.ResourcePool(ctx)
		if err != nil {
			return fmt.Errorf("%s: %v", h.Entity().Name, err)
		}
		dc := datacenterOf(h)
		if dc == nil {
			return fmt.Errorf("%s: no datacenter", h.Entity().Name)
		}
		folder := object.NewFolder(c, dc.VmFolder)

		for i := 0; i < sz.vmsPerHost; i++ {
			name := fmt.Sprintf("%s_VM%d", h.Entity().Name, i)
			ds := fmt.Sprintf("[LocalDS_%d]", next[dc.Self]%sz.datastores)
			next[dc.Self]++

			var devices object.VirtualDeviceList
			scsi, _ := devices.CreateSCSIController("pvscsi")
			ide, _ := devices.CreateIDEController()
			cdrom, _ := devices.CreateCdrom(ide.(*types.VirtualIDEController))
			disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
				ds+" "+path.Join(name, "disk1.vmdk"))
			disk.CapacityInKB = 1024 * 1024
			nic := esx.EthernetCard
			devices = append(devices, scsi, cdrom, disk, &nic)

			spec := types.VirtualMachineConfigSpec{
				Name:    name,
				GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
				Files:   &types.VirtualMachineFileInfo{VmPathName: ds},
			}
			spec.DeviceChange, _ = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)

			task, err := folder.CreateVM(ctx, spec, pool, host)
			if err != nil {
				return err
			}
			info, err := task.WaitForResult(ctx, nil)
			if err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			if sz.autostart {
				vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
				if _, err := vm.PowerOn(ctx); err != nil {
					return fmt.Errorf("%s: power on: %v", name, err)
				}
			}
		}
	}
	return nil
}

func datacenterOf(e mo.Entity) *mo.Datacenter {
	for e != nil && e.Entity().Parent != nil {
		parent := simulator.Map.Get(*e.Entity().Parent)
		if dc, ok := parent.(*simulator.Datacenter); ok {
			return &dc.Datacenter
		}
		e, _ = parent.(mo.Entity)
	}
	return nil
}
