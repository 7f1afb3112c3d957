#pragma once
#include <napi.h>

namespace fedgate {
// Adds sdNotify(socket, message) to the addon's exports (see sdnotify.cc).
void RegisterSdNotify(Napi::Env env, Napi::Object exports);
}
