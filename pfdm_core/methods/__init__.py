"""Methods floor: PFDM's client side and sampler (`pfdm`), its server (`server`: uploads only), local-only and
centralized DDPMs (`ddpm`), one FedAvg loop with the Phoenix strategies (`fedavg`), model selection by
validation (`selection`), and the registry of methods by name (`registry`)."""
