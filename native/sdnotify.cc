// sd_notify(3) without libsystemd: one datagram to the unix socket systemd names in
// $NOTIFY_SOCKET ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=..."). Node has no AF_UNIX
// datagram sockets, so this small part lives in the addon; agent/service/notify.ts is its facade.
#include "sdnotify.h"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#ifdef __linux__
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#endif

namespace fedgate {

namespace {

// sdNotify(socket: string, message: string): sends one datagram; throws with the errno text.
Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw Napi::TypeError::New(env, "sdNotify(socket, message): both must be strings");
#ifdef __linux__
  const std::string path = info[0].As<Napi::String>();
  const std::string message = info[1].As<Napi::String>();
  sockaddr_un addr{};
  if (path.size() < 2 || path.size() >= sizeof(addr.sun_path) || (path[0] != '/' && path[0] != '@'))
    throw Napi::RangeError::New(env, "sdNotify: the socket must be an absolute path or an abstract name starting with @, shorter than " +
                                         std::to_string(sizeof(addr.sun_path)) + " bytes, got '" + path + "'");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace: the name is the exact length
  const socklen_t len = socklen_t(offsetof(sockaddr_un, sun_path) + path.size());
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Napi::Error::New(env, std::string("sdNotify: socket: ") + std::strerror(errno));
  const ssize_t sent = sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  const int err = errno;
  close(fd);
  if (sent < 0) throw Napi::Error::New(env, "sdNotify: sendto " + path + ": " + std::strerror(err));
  return env.Undefined();
#else
  throw Napi::Error::New(env, "sdNotify: only on Linux");
#endif
}

}  // namespace

void RegisterSdNotify(Napi::Env env, Napi::Object exports) {
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
}

}  // namespace fedgate
