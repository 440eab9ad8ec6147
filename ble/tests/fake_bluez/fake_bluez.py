#!/usr/bin/env python3
"""A fake BlueZ (`org.bluez`) for testing BLE scanners without Bluetooth hardware.

It connects to the D-Bus bus at --bus (a private dbus-daemon the test started), owns the name
`org.bluez` and serves what a central-role scanner (btleplug's BlueZ backend, through the
`bluez-async` crate) uses:

  /                       org.freedesktop.DBus.ObjectManager: GetManagedObjects,
                          InterfacesAdded, InterfacesRemoved
  /org/bluez/hci0         org.bluez.Adapter1: StartDiscovery, StopDiscovery, SetDiscoveryFilter,
                          GetDiscoveryFilters, RemoveDevice; properties Address, AddressType, Name,
                          Alias, Class, Powered, PowerState, Discoverable, Pairable, Discovering,
                          UUIDs, Modalias, Roles (Powered can be Set)
  /org/bluez/hci0/dev_XX  org.bluez.Device1: Address, AddressType, Alias, Paired, Bonded, Trusted,
                          Blocked, LegacyPairing, Connected, ServicesResolved, UUIDs, Adapter,
                          AdvertisingFlags, RSSI (int16) and ServiceData (a{sv}: 128-bit UUID
                          string -> byte array)

Every object also has org.freedesktop.DBus.Properties (Get, GetAll, Set, PropertiesChanged).

Control channel: one command per line on standard input, each answered on standard output by
`OK` or `ERR <reason>`:

  advert <MAC> <UUID> <HEX> [RSSI|-]  the device at MAC advertises service data HEX (`-`: none)
                                      under UUID (4 hex digits for a 16-bit UUID, or a full
                                      128-bit UUID); RSSI `-` or left out: not measured.
                                      A new device is announced with InterfacesAdded, a known one
                                      updated with PropertiesChanged (RSSI and ServiceData). While
                                      the adapter is not discovering it is held back and delivered
                                      when discovery starts, as a radio would.
  device <MAC> [RSSI|-]               a device advertising no service data (same rules).
  cache <MAC> <UUID> <HEX> [RSSI|-]   a device BlueZ already knows (from an earlier scan): added at
                                      once, whether or not the adapter is discovering.
  remove <MAC>                        the device goes away (InterfacesRemoved).
  power on|off                        the adapter is powered on or off (off also stops discovery).
  ping                                nothing (its OK shows that every earlier call was reported).
  quit                                exit.

Standard output also reports, one line each, what clients did, so a test can wait for them:
`READY` (the name is owned), `CALL StartDiscovery`, `CALL StopDiscovery`,
`CALL SetDiscoveryFilter <JSON>`, `CALL SetPowered <true|false>`.

Start-up options: --no-adapter (BlueZ runs but has no adapter), --powered-off (the adapter is
off), --blocked (powering on fails, as with rfkill). The program exits when standard input
closes or the bus goes away.

Needs Python 3 with dbus-python and PyGObject (Debian: python3-dbus python3-gi).
"""

import argparse
import json
import os
import sys

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"
DEVICE_IFACE = "org.bluez.Device1"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
OM_IFACE = "org.freedesktop.DBus.ObjectManager"
ADAPTER_PATH = "/org/bluez/hci0"
BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class BluezError(dbus.DBusException):
    def __init__(self, name, message):
        super().__init__(message)
        self._dbus_error_name = "org.bluez.Error." + name


class InvalidArgs(dbus.DBusException):
    _dbus_error_name = "org.freedesktop.DBus.Error.InvalidArgs"


def full_uuid(text):
    text = text.lower()
    if len(text) == 4:
        int(text, 16)
        return "0000" + text + BASE_UUID_TAIL
    if len(text) == 36:
        return text
    raise ValueError("UUID must be 4 hex digits or 36 characters: " + text)


def plain(value):
    """A D-Bus value as JSON-able Python data (for the CALL report)."""
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Dictionary, dict)):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (dbus.Array, list)):
        return [plain(v) for v in value]
    if isinstance(value, (int,)):
        return int(value)
    return str(value)


class PropertyObject(dbus.service.Object):
    """An object with one BlueZ interface and the Properties interface."""

    def __init__(self, bus, path, iface, props):
        super().__init__(bus, path)
        self.path = path
        self.iface = iface
        self.props = props

    def update(self, changed):
        self.props.update(changed)
        self.PropertiesChanged(self.iface, dbus.Dictionary(changed, signature="sv"), [])

    @dbus.service.method(PROPS_IFACE, in_signature="ss", out_signature="v")
    def Get(self, iface, name):
        if iface != self.iface or name not in self.props:
            raise InvalidArgs("No such property " + name)
        return self.props[name]

    @dbus.service.method(PROPS_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        if iface != self.iface:
            raise InvalidArgs("No such interface " + iface)
        return dbus.Dictionary(self.props, signature="sv")

    @dbus.service.method(PROPS_IFACE, in_signature="ssv", out_signature="")
    def Set(self, iface, name, value):
        if iface != self.iface or name not in self.props:
            raise InvalidArgs("No such property " + name)
        self.set_property(name, value)

    def set_property(self, name, value):
        raise dbus.DBusException(
            "Property " + name + " is read-only",
            name="org.freedesktop.DBus.Error.PropertyReadOnly",
        )

    @dbus.service.signal(PROPS_IFACE, signature="sa{sv}as")
    def PropertiesChanged(self, iface, changed, invalidated):
        pass


class Device(PropertyObject):
    def __init__(self, bus, mac):
        path = ADAPTER_PATH + "/dev_" + mac.replace(":", "_")
        props = {
            "Address": dbus.String(mac),
            "AddressType": dbus.String("random"),
            "Alias": dbus.String(mac.replace(":", "-")),
            "Paired": dbus.Boolean(False),
            "Bonded": dbus.Boolean(False),
            "Trusted": dbus.Boolean(False),
            "Blocked": dbus.Boolean(False),
            "LegacyPairing": dbus.Boolean(False),
            "Connected": dbus.Boolean(False),
            "ServicesResolved": dbus.Boolean(False),
            "UUIDs": dbus.Array([], signature="s"),
            "Adapter": dbus.ObjectPath(ADAPTER_PATH),
            "AdvertisingFlags": dbus.Array([dbus.Byte(0x1A)], signature="y"),
        }
        super().__init__(bus, path, DEVICE_IFACE, props)

    @staticmethod
    def advert_props(service_data, rssi):
        """The properties one advertising report sets."""
        props = {}
        if rssi is not None:
            props["RSSI"] = dbus.Int16(rssi)
        if service_data is not None:
            uuid, data = service_data
            props["ServiceData"] = dbus.Dictionary(
                {uuid: dbus.Array([dbus.Byte(b) for b in data], signature="y")},
                signature="sv",
            )
            props["UUIDs"] = dbus.Array([uuid], signature="s")
        return props


class Adapter(PropertyObject):
    def __init__(self, bus, fake, powered, blocked):
        props = {
            "Address": dbus.String("00:1A:7D:DA:71:13"),
            "AddressType": dbus.String("public"),
            "Name": dbus.String("tether-fake"),
            "Alias": dbus.String("tether-fake"),
            "Class": dbus.UInt32(0),
            "Powered": dbus.Boolean(powered),
            "PowerState": dbus.String("on" if powered else "off"),
            "Discoverable": dbus.Boolean(False),
            "DiscoverableTimeout": dbus.UInt32(180),
            "Pairable": dbus.Boolean(False),
            "PairableTimeout": dbus.UInt32(0),
            "Discovering": dbus.Boolean(False),
            "UUIDs": dbus.Array([], signature="s"),
            "Modalias": dbus.String("usb:v1D6Bp0246d0548"),
            "Roles": dbus.Array(["central", "peripheral"], signature="s"),
        }
        super().__init__(bus, ADAPTER_PATH, ADAPTER_IFACE, props)
        self.fake = fake
        self.blocked = blocked

    def powered(self):
        return bool(self.props["Powered"])

    def discovering(self):
        return bool(self.props["Discovering"])

    def set_property(self, name, value):
        if name != "Powered":
            super().set_property(name, value)
        emit("CALL SetPowered " + ("true" if value else "false"))
        if value and self.blocked:
            raise BluezError("Failed", "Blocked through rfkill")
        self.fake.set_powered(bool(value))

    @dbus.service.method(ADAPTER_IFACE, in_signature="", out_signature="")
    def StartDiscovery(self):
        emit("CALL StartDiscovery")
        if not self.powered():
            raise BluezError("NotReady", "Resource Not Ready")
        if self.discovering():
            raise BluezError("InProgress", "Operation already in progress")
        self.update({"Discovering": dbus.Boolean(True)})
        self.fake.flush_pending()

    @dbus.service.method(ADAPTER_IFACE, in_signature="", out_signature="")
    def StopDiscovery(self):
        emit("CALL StopDiscovery")
        if not self.powered():
            raise BluezError("NotReady", "Resource Not Ready")
        if not self.discovering():
            raise BluezError("Failed", "No discovery started")
        self.update({"Discovering": dbus.Boolean(False)})

    @dbus.service.method(ADAPTER_IFACE, in_signature="a{sv}", out_signature="")
    def SetDiscoveryFilter(self, properties):
        emit("CALL SetDiscoveryFilter " + json.dumps(plain(properties), sort_keys=True))
        if not self.powered():
            raise BluezError("NotReady", "Resource Not Ready")
        known = {"UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable", "Pattern"}
        for key in properties:
            if key not in known:
                raise BluezError("InvalidArguments", "Invalid arguments in method call")

    @dbus.service.method(ADAPTER_IFACE, in_signature="", out_signature="as")
    def GetDiscoveryFilters(self):
        return ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable", "Pattern"]

    @dbus.service.method(ADAPTER_IFACE, in_signature="o", out_signature="")
    def RemoveDevice(self, device):
        if not self.fake.remove_path(str(device)):
            raise BluezError("DoesNotExist", "Does Not Exist")


class Root(dbus.service.Object):
    def __init__(self, bus, fake):
        super().__init__(bus, "/")
        self.fake = fake

    @dbus.service.method(OM_IFACE, in_signature="", out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        return self.fake.managed_objects()

    @dbus.service.signal(OM_IFACE, signature="oa{sa{sv}}")
    def InterfacesAdded(self, path, interfaces):
        pass

    @dbus.service.signal(OM_IFACE, signature="oas")
    def InterfacesRemoved(self, path, interfaces):
        pass


class FakeBluez:
    def __init__(self, bus, args):
        self.bus = bus
        self.root = Root(bus, self)
        self.adapter = None
        if not args.no_adapter:
            self.adapter = Adapter(bus, self, not args.powered_off, args.blocked)
        self.devices = {}
        self.pending = []

    def managed_objects(self):
        objects = {}
        if self.adapter is not None:
            objects[dbus.ObjectPath(ADAPTER_PATH)] = {
                ADAPTER_IFACE: dbus.Dictionary(self.adapter.props, signature="sv")
            }
        for device in self.devices.values():
            objects[dbus.ObjectPath(device.path)] = {
                DEVICE_IFACE: dbus.Dictionary(device.props, signature="sv")
            }
        return dbus.Dictionary(objects, signature="oa{sa{sv}}")

    def report(self, mac, service_data, rssi, cached=False):
        """One advertising report (or a cache entry) for the device at mac."""
        if self.adapter is None:
            raise ValueError("no adapter")
        if not cached and not self.adapter.discovering():
            self.pending.append((mac, service_data, rssi))
            return
        props = Device.advert_props(service_data, rssi)
        device = self.devices.get(mac)
        if device is None:
            device = Device(self.bus, mac)
            device.props.update(props)
            self.devices[mac] = device
            self.root.InterfacesAdded(
                dbus.ObjectPath(device.path),
                {DEVICE_IFACE: dbus.Dictionary(device.props, signature="sv")},
            )
        elif props:
            device.update(props)

    def flush_pending(self):
        pending, self.pending = self.pending, []
        for mac, service_data, rssi in pending:
            self.report(mac, service_data, rssi)

    def remove_path(self, path):
        for mac, device in list(self.devices.items()):
            if device.path == path:
                del self.devices[mac]
                device.remove_from_connection()
                self.root.InterfacesRemoved(dbus.ObjectPath(path), [DEVICE_IFACE])
                return True
        return False

    def set_powered(self, on):
        if self.adapter is None:
            raise ValueError("no adapter")
        changed = {
            "Powered": dbus.Boolean(on),
            "PowerState": dbus.String("on" if on else "off"),
        }
        if not on and self.adapter.discovering():
            changed["Discovering"] = dbus.Boolean(False)
        self.adapter.update(changed)

    def command(self, line):
        words = line.split()
        if not words:
            raise ValueError("empty command")
        verb, rest = words[0], words[1:]
        if verb in ("advert", "cache"):
            if len(rest) not in (3, 4):
                raise ValueError(verb + " <MAC> <UUID> <HEX> [RSSI|-]")
            mac = parse_mac(rest[0])
            data = b"" if rest[2] == "-" else bytes.fromhex(rest[2])
            self.report(mac, (full_uuid(rest[1]), data), parse_rssi(rest[3:]), cached=verb == "cache")
        elif verb == "device":
            if len(rest) not in (1, 2):
                raise ValueError("device <MAC> [RSSI|-]")
            self.report(parse_mac(rest[0]), None, parse_rssi(rest[1:]))
        elif verb == "remove":
            if len(rest) != 1:
                raise ValueError("remove <MAC>")
            path = ADAPTER_PATH + "/dev_" + parse_mac(rest[0]).replace(":", "_")
            if not self.remove_path(path):
                raise ValueError("no such device")
        elif verb == "power":
            if rest not in (["on"], ["off"]):
                raise ValueError("power on|off")
            self.set_powered(rest[0] == "on")
        elif verb == "ping":
            pass
        elif verb == "quit":
            return False
        else:
            raise ValueError("unknown command " + verb)
        return True


def parse_mac(text):
    parts = text.upper().split(":")
    if len(parts) != 6 or any(len(p) != 2 for p in parts):
        raise ValueError("bad MAC address " + text)
    for p in parts:
        int(p, 16)
    return ":".join(parts)


def parse_rssi(words):
    if not words or words[0] == "-":
        return None
    rssi = int(words[0])
    if not -32768 <= rssi <= 32767:
        raise ValueError("RSSI out of range")
    return rssi


def main():
    parser = argparse.ArgumentParser(description="A fake BlueZ on a private D-Bus bus.")
    parser.add_argument("--bus", required=True, help="D-Bus address of the bus to serve on")
    parser.add_argument("--no-adapter", action="store_true", help="no adapter at all")
    parser.add_argument("--powered-off", action="store_true", help="the adapter is off")
    parser.add_argument("--blocked", action="store_true", help="powering on fails (rfkill)")
    args = parser.parse_args()

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    loop = GLib.MainLoop()
    bus = dbus.bus.BusConnection(args.bus)
    bus.call_on_disconnection(lambda _conn: loop.quit())
    fake = FakeBluez(bus, args)
    # Own the name only once every object is exported: a client that sees the name sees them.
    name = dbus.service.BusName(BLUEZ, bus, do_not_queue=True)

    buffer = b""

    def on_stdin(fd, condition):
        nonlocal buffer
        chunk = os.read(fd, 4096)
        if not chunk:
            loop.quit()
            return False
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").strip()
            try:
                keep_going = fake.command(line)
            except (ValueError, dbus.DBusException) as e:
                emit("ERR " + str(e).replace("\n", " "))
                continue
            emit("OK")
            if not keep_going:
                loop.quit()
                return False
        return True

    GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN | GLib.IO_HUP, on_stdin)
    emit("READY")
    loop.run()
    del name


if __name__ == "__main__":
    main()
