/*
 * partition.h: room in bridgecore.event's partitions for the ids a store
 * is about to take.
 */
#ifndef BRIDGECORE_PARTITION_H
#define BRIDGECORE_PARTITION_H

#include "bridgecore.h"

extern void partition_ensure_room(int64 nrows);

#endif
